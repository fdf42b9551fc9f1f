"""The certificate authority as use cases: init, groups, issue, list, revoke, renew, CRL,
export, invite / enrol, and the first-run bootstrap of ``serve``.

Keys and certificates are made by :mod:`securepacs.pki`; what they mean (identity, group,
allowed AE titles, revocation) lives in the trust store (:mod:`securepacs.index.trust`),
so every server sharing the database sees a change at once. Private keys of clients are
never held by the CA: ``issue`` writes them to the folder asked for, enrolment never sees
them at all (the client sends a CSR, RFC 2986).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509

from securepacs.errors import PkiError
from securepacs.model.identity import ALL_PERMISSIONS, Permission
from securepacs.model.printable import check_certificate_name, one_line
from securepacs.model.trust import CertificateRecord, EnrolmentToken, Group, TrustSnapshot
from securepacs.pki import authority, bundles, crl
from securepacs.pki.pemfiles import certificate_pem, parse_certificate_pem

LOCAL_GROUP = "local"
_ROLE_OF: dict[str, authority.Role] = {"server": "server", "node": "node", "client": "client"}
TOKEN_PREFIX = "SPK1"


class TrustPort(Protocol):
    def create_schema(self) -> None: ...
    def version(self) -> int: ...
    def snapshot(self) -> TrustSnapshot: ...
    def put_group(self, group: Group) -> None: ...
    def group(self, name: str) -> Group | None: ...
    def groups(self) -> list[Group]: ...
    def add_certificate(self, record: CertificateRecord) -> None: ...
    def certificate(self, serial: int) -> CertificateRecord | None: ...
    def certificates(self, *, name: str | None = None) -> list[CertificateRecord]: ...
    def revoke(self, serial: int, *, reason: str, at: datetime) -> CertificateRecord: ...
    def next_crl_number(self) -> int: ...
    def add_token(self, token: EnrolmentToken) -> None: ...
    def redeem_token(self, secret_hash: str, *, at: datetime) -> EnrolmentToken: ...
    def mark_token_used_by(self, secret_hash: str, serial: int) -> None: ...


@dataclass(frozen=True)
class Issued:
    """Files written for a newly issued certificate."""

    record: CertificateRecord
    key_path: Path | None
    cert_path: Path
    ca_path: Path


def record_for(cert: x509.Certificate, *, kind: str, organization: str | None = None,
               group: str | None = None, ae_titles: Sequence[str] = (),
               key_path: Path | None = None, renewed_from: int | None = None) -> CertificateRecord:
    """The trust-store record of a certificate."""
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return CertificateRecord(
        serial=cert.serial_number, name=str(cn[0].value) if cn else f"{cert.serial_number:x}",
        kind=kind, fingerprint=authority.fingerprint_sha256(cert),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        pem=certificate_pem(cert),
        organization=organization, group=group, ae_titles=tuple(ae_titles),
        key_path=str(key_path) if key_path else None, renewed_from=renewed_from)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str]:
    """``SPK1.<secret>.<CA fingerprint>`` -> (secret, fingerprint hex).

    Raises
    ------
    PkiError
        Not a securepacs enrolment token.
    """
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[2]) != 64:
        raise PkiError("this is not a securepacs enrolment token (expected SPK1.<secret>.<pin>)")
    try:
        int(parts[2], 16)
    except ValueError:
        raise PkiError("the enrolment token's CA pin is not hexadecimal") from None
    return parts[1], parts[2].upper()


class CertificateAuthority:
    """The CA of one data folder: key and certificate files in `pki_dir`, records in `store`.

    Parameters
    ----------
    store : TrustPort
        The trust store (index database).
    pki_dir : Path
        Folder of ``ca.key`` / ``ca.pem`` (and the server's own ``server.key``/``server.pem``).
    passphrase : bytes, optional
        Passphrase of ``ca.key`` if it is encrypted.
    """

    def __init__(self, store: TrustPort, pki_dir: Path, *, passphrase: bytes | None = None):
        self.store = store
        self.pki_dir = Path(pki_dir)
        self._passphrase = passphrase
        self._naming = threading.Lock()  # name check and record, one at a time in this process

    # -- files --------------------------------------------------------------------------
    @property
    def ca_path(self) -> Path:
        return self.pki_dir / "ca.pem"

    @property
    def exists(self) -> bool:
        return self.ca_path.exists()

    def ca_certificate(self) -> x509.Certificate:
        if not self.exists:
            raise PkiError(f"no CA in {self.pki_dir}: run `securepacs ca init` first")
        return authority.load_certificates(self.ca_path)[0]

    def _ca(self) -> tuple[authority.PrivateKey, x509.Certificate]:
        cert = self.ca_certificate()
        key = authority.load_private_key(self.pki_dir / "ca.key", self._passphrase)
        return key, cert

    # -- init / bootstrap ---------------------------------------------------------------
    def init(self, *, at: datetime, rsa: bool = False, name: str = "securepacs CA",
             organization: str | None = None) -> CertificateRecord:
        """Create the root CA (ECDSA P-256, or RSA 3072), key mode 0600.

        Raises
        ------
        PkiError
            A CA already exists in this data folder.
        """
        if self.exists:
            raise PkiError(f"a CA already exists in {self.pki_dir} (fingerprint "
                           f"{authority.fingerprint_sha256(self.ca_certificate())})")
        key, cert = authority.create_root_ca(name, key_kind="rsa" if rsa else "ec", at=at,
                                             organization=organization)
        authority.write_private_key(self.pki_dir / "ca.key", key, self._passphrase)
        authority.write_certificates(self.ca_path, [cert])
        record = record_for(cert, kind="ca", key_path=self.pki_dir / "ca.key")
        self.store.add_certificate(record)
        return record

    def bootstrap_server(self, *, hostnames: Sequence[str], at: datetime
                         ) -> authority.BootstrapResult:
        """First run of ``serve`` on the default PKI: make what is missing, record it.

        No CA: a CA, a server and a client certificate (group ``local``, every permission).
        A CA (from ``ca init``) but no server certificate: a server certificate.
        """
        if not self.exists:
            result = authority.bootstrap(self.pki_dir, hostnames=hostnames, at=at)
        else:
            result = authority.BootstrapResult(
                ca_cert=self.ca_path, server_cert=self.pki_dir / "server.pem",
                server_key=self.pki_dir / "server.key", client_cert=self.pki_dir / "client.pem",
                client_key=self.pki_dir / "client.key", created=False)
            if not result.server_cert.exists():
                self._issue_server("securepacs-server", sans=[*hostnames, "localhost", "127.0.0.1"],
                                   out=self.pki_dir, at=at, days=825, file_stem="server")
                result = authority.BootstrapResult(**{**result.__dict__, "created": True})
        self._register_files(result)
        return result

    def _register_files(self, result: authority.BootstrapResult) -> None:
        """Record the bootstrap's certificates in the trust store, once (idempotent)."""
        # another instance starting at the same moment may record the same ones: a lost
        # race (PkiError "already exists") is fine when the record is there on re-reading
        if self.store.group(LOCAL_GROUP) is None:
            try:
                # the server's own operator reads every organisation (docs/tenants.md)
                self.store.put_group(Group(LOCAL_GROUP,
                                           ALL_PERMISSIONS | {Permission.CROSS_ORG}))
            except PkiError:
                if self.store.group(LOCAL_GROUP) is None:
                    raise
        entries = [(result.ca_cert, "ca", None, None, self.pki_dir / "ca.key"),
                   (result.server_cert, "server", None, None, result.server_key),
                   (result.client_cert, "client", authority.LOCAL_ORGANIZATION, LOCAL_GROUP,
                    result.client_key)]
        for path, kind, org, group, key in entries:
            if not path.exists():
                continue
            cert = authority.load_certificates(path)[0]
            if self.store.certificate(cert.serial_number) is None:
                try:
                    self.store.add_certificate(record_for(cert, kind=kind, organization=org,
                                                          group=group, key_path=key))
                except PkiError:
                    if self.store.certificate(cert.serial_number) is None:
                        raise

    # -- groups -------------------------------------------------------------------------
    def create_group(self, name: str, permissions: frozenset[Permission]) -> Group:
        if not name.strip():
            raise ValueError("a group needs a name")
        group = Group(name.strip(), permissions)
        self.store.put_group(group)
        return group

    # -- issue / renew ------------------------------------------------------------------
    def _write(self, stem: str, out: Path, key: authority.PrivateKey | None,
               cert: x509.Certificate, ca: x509.Certificate) -> tuple[Path | None, Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        key_path = out / f"{stem}.key" if key is not None else None
        if key is not None and key_path is not None:
            authority.write_private_key(key_path, key)
        cert_path = out / f"{stem}.pem"
        authority.write_certificates(cert_path, [cert, ca])
        ca_path = out / "ca.pem"
        if ca_path.resolve() != self.ca_path.resolve():
            authority.write_certificates(ca_path, [ca])
        return key_path, cert_path, ca_path

    def issue_server(self, name: str, *, sans: Sequence[str], out: Path, at: datetime,
                     days: int = 825, file_stem: str | None = None) -> Issued:
        with self._naming:
            self._check_new_name(name)
            return self._issue_server(name, sans=sans, out=out, at=at, days=days,
                                      file_stem=file_stem)

    def _issue_server(self, name: str, *, sans: Sequence[str], out: Path, at: datetime,
                      days: int, file_stem: str | None) -> Issued:
        ca_key, ca_cert = self._ca()
        key, cert = authority.issue_certificate(ca_key, ca_cert, common_name=name, role="server",
                                                at=at, days=days, sans=sans)
        key_path, cert_path, ca_path = self._write(file_stem or name, out, key, cert, ca_cert)
        record = record_for(cert, kind="server", key_path=key_path)
        self.store.add_certificate(record)
        return Issued(record, key_path, cert_path, ca_path)

    def issue_client(self, name: str, *, organization: str, group: str,
                     ae_titles: Sequence[str] = (), out: Path, at: datetime,
                     days: int = 825) -> Issued:
        self._require_group(group)
        with self._naming:
            self._check_new_name(name)
            return self._issue_client(name, organization=organization, group=group,
                                      ae_titles=ae_titles, out=out, at=at, days=days)

    def _issue_client(self, name: str, *, organization: str, group: str,
                      ae_titles: Sequence[str], out: Path, at: datetime, days: int) -> Issued:
        ca_key, ca_cert = self._ca()
        key, cert = authority.issue_certificate(
            ca_key, ca_cert, common_name=name, role="client", at=at, days=days,
            organization=organization, organizational_unit=group)
        key_path, cert_path, ca_path = self._write(name, out, key, cert, ca_cert)
        record = record_for(cert, kind="client", organization=organization, group=group,
                            ae_titles=_ae_list(ae_titles), key_path=key_path)
        self.store.add_certificate(record)
        return Issued(record, key_path, cert_path, ca_path)

    def issue_node(self, name: str, *, organization: str, group: str,
                   ae_titles: Sequence[str] = (), sans: Sequence[str] = (), out: Path,
                   at: datetime, days: int = 825) -> Issued:
        """A certificate for a DICOM node that is both client and server (Orthanc, a
        workstation, a modality): serverAuth + clientAuth, bound to an organisation, a group
        and AE titles like a client, with SANs like a server."""
        self._require_group(group)
        with self._naming:
            self._check_new_name(name)
            ca_key, ca_cert = self._ca()
            key, cert = authority.issue_certificate(
                ca_key, ca_cert, common_name=name, role="node", at=at, days=days, sans=sans,
                organization=organization, organizational_unit=group)
            key_path, cert_path, ca_path = self._write(name, out, key, cert, ca_cert)
            record = record_for(cert, kind="node", organization=organization, group=group,
                                ae_titles=_ae_list(ae_titles), key_path=key_path)
            self.store.add_certificate(record)
            return Issued(record, key_path, cert_path, ca_path)

    def renew(self, name_or_serial: str, *, at: datetime, new_key: bool = True,
              out: Path | None = None, days: int = 825) -> Issued:
        """A new certificate for the same identity (new key, or the same public key)."""
        old = self.find(name_or_serial)
        if old.kind == "ca":
            raise PkiError("renewing the CA itself is not supported; run `ca init` on a new folder")
        ca_key, ca_cert = self._ca()
        old_cert = parse_certificate_pem(old.pem)
        sans: list[str] = []
        try:
            ext = old_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(v.value) for v in ext]  # DNS names and IP addresses
        except x509.ExtensionNotFound:
            pass
        public = None if new_key else old_cert.public_key()
        key, cert = authority.issue_certificate(
            ca_key, ca_cert, common_name=old.name, role=_ROLE_OF.get(old.kind, "client"),
            at=at, days=days, sans=sans, organization=old.organization,
            organizational_unit=old.group, public_key=public)  # type: ignore[arg-type]
        target = out or (Path(old.key_path).parent if old.key_path else self.pki_dir)
        stem = Path(old.key_path).stem if old.key_path else old.name
        key_path, cert_path, ca_path = self._write(stem, target, key, cert, ca_cert)
        record = record_for(cert, kind=old.kind, organization=old.organization, group=old.group,
                            ae_titles=old.ae_titles, key_path=key_path or (
                                Path(old.key_path) if old.key_path else None),
                            renewed_from=old.serial)
        self.store.add_certificate(record)
        return Issued(record, key_path, cert_path, ca_path)

    # -- lookup / list / revoke ---------------------------------------------------------
    def find(self, name_or_serial: str) -> CertificateRecord:
        """The newest certificate named so, or the one with that serial (hex)."""
        text = name_or_serial.strip()
        by_name = self.store.certificates(name=text)
        if by_name:
            return by_name[-1]
        try:
            found = self.store.certificate(int(text.replace(":", ""), 16))
        except ValueError:
            found = None
        if found is None:
            raise PkiError(f"no certificate named or numbered {text!r} (see `securepacs ca list`)")
        return found

    def list(self, *, at: datetime, expiring: timedelta | None = None) -> list[CertificateRecord]:
        records = self.store.certificates()
        if expiring is not None:
            records = [r for r in records if not r.is_revoked and r.not_after - at <= expiring]
        return records

    def revoke(self, name_or_serial: str, *, reason: str, at: datetime) -> CertificateRecord:
        """Revoke the one certificate named or numbered so.

        By name, exactly one live certificate must carry it: with several (a renewal whose
        predecessor is still valid) the serial must be given, so a name never revokes a
        certificate the caller did not mean.

        Raises
        ------
        PkiError
            No such certificate, several live ones of that name, already revoked, the CA.
        """
        text = name_or_serial.strip()
        by_name = self.store.certificates(name=text)
        live = [r for r in by_name if not r.is_revoked]
        if len(live) > 1:
            serials = ", ".join(f"{r.serial:x}" for r in live)
            raise PkiError(f"{len(live)} valid certificates are named {one_line(text)!s} "
                           f"(serials {serials}): revoke by serial")
        record = live[0] if live else self.find(text)
        if record.is_revoked:
            raise PkiError(f"certificate {one_line(record.name)} (serial {record.serial:x}) is "
                           "already revoked")
        if record.kind == "ca":
            raise PkiError("the CA certificate cannot revoke itself; retire the data folder instead")
        return self.store.revoke(record.serial, reason=reason, at=at)

    def crl(self, *, at: datetime, next_update: timedelta = timedelta(days=7)
            ) -> x509.CertificateRevocationList:
        """A signed CRL of every revoked certificate (RFC 5280 5), with a fresh CRL number."""
        ca_key, ca_cert = self._ca()
        revoked = [crl.Revoked(r.serial, r.revoked_at or at, r.revocation_reason or "unspecified")
                   for r in self.store.certificates() if r.is_revoked]
        return crl.build_crl(ca_key, ca_cert, revoked, at=at, next_update=next_update,
                             crl_number=self.store.next_crl_number())

    def export(self, name_or_serial: str, *, key_path: Path | None = None,
               passphrase: bytes | None = None, p12: bool = False, legacy: bool = False
               ) -> bytes:
        """A certificate with its key and chain: PKCS#12 (passphrase required) or PEM.

        The CA keeps no client keys: the key is read from where ``issue`` wrote it (or
        `key_path`).
        """
        record = self.find(name_or_serial)
        if record.is_revoked:
            raise PkiError(f"certificate {record.name} is revoked; issue or renew one first")
        path = key_path or (Path(record.key_path) if record.key_path else None)
        if path is None or not path.exists():
            raise PkiError(f"the private key of {record.name} is not at "
                           f"{path or 'a known place'}: give it with --key")
        key = authority.load_private_key(path)
        cert = parse_certificate_pem(record.pem)
        ca_cert = self.ca_certificate()
        if p12:
            if not passphrase:
                raise PkiError("a PKCS#12 export needs a password (--password-file)")
            return bundles.pkcs12(record.name, key, cert, [ca_cert], passphrase, legacy=legacy)
        return bundles.pem_bundle(key, [cert, ca_cert], passphrase)

    def _check_new_name(self, name: str) -> None:
        """A name for a new certificate: the naming rule, and no valid certificate has it.

        Raises
        ------
        ValueError
            Outside :data:`~securepacs.model.printable.NAME_RULE`, or shaped like a serial.
        PkiError
            A certificate that is not revoked already has this name.
        """
        check_certificate_name(name)
        if len(name) >= 16 and re.fullmatch(r"[0-9A-Fa-f:]+", name):
            raise ValueError(f"invalid certificate name {name}: it looks like a serial number")
        taken = [r for r in self.store.certificates(name=name) if not r.is_revoked]
        if taken:
            raise PkiError(f"the name {name} is already taken by certificate "
                           f"{taken[-1].serial:x}: choose another name, or renew or revoke "
                           "that one")

    def _unique_name(self, organization: str) -> str:
        stem = re.sub(r"[^a-z0-9]+", "-", organization.lower()).strip("-")[:40] or "client"
        for _ in range(8):
            name = f"{stem}-{secrets.token_hex(4)}"
            if not self.store.certificates(name=name):
                return name
        raise PkiError("could not find a free certificate name")  # pragma: no cover

    def _require_group(self, group: str) -> None:
        if self.store.group(group) is None:
            known = ", ".join(g.name for g in self.store.groups()) or "none yet"
            raise PkiError(f"no group {group!r} (known: {known}); create it with "
                           f"`securepacs ca group create {group} --allow ...`")

    # -- enrolment ----------------------------------------------------------------------
    def invite(self, *, organization: str, group: str, ae_titles: Sequence[str] = (),
               valid_for: timedelta, at: datetime) -> str:
        """A one-time enrolment token: ``SPK1.<secret>.<CA SHA-256 fingerprint>``."""
        self._require_group(group)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        self.store.add_token(EnrolmentToken(
            secret_hash=hash_secret(secret), organization=organization, group=group,
            ae_titles=_ae_list(ae_titles), expires_at=at + valid_for, created_at=at))
        pin = authority.fingerprint_sha256(self.ca_certificate()).replace(":", "")
        return f"{TOKEN_PREFIX}.{secret}.{pin}"

    def enrol(self, secret: str, csr: x509.CertificateSigningRequest, *, at: datetime,
              name: str | None = None, days: int = 825
              ) -> tuple[x509.Certificate, x509.Certificate, EnrolmentToken]:
        """Redeem a token: sign the CSR's public key as a client certificate of the token's
        identity.

        The CA names the certificate: `name` (asked for by the client, outside the CSR) if it
        follows the naming rule and no valid certificate has it, else a new unique name from
        the organisation (so a taken name neither spends the token for nothing nor tells a
        client without a valid token which names exist). Nothing of the CSR but its public
        key (and its self-signature) is used: its subject never reaches a certificate, a
        record or a log line. The name given is the issued certificate's common name.

        Raises
        ------
        ValueError
            `name` breaks the naming rule (before the token is spent).
        PkiError
            Unknown, used or expired token; a CSR whose signature does not verify.
        """
        if not csr.is_signature_valid:
            raise PkiError("the certificate request's signature does not verify")
        if name is not None:
            check_certificate_name(name)
        digest = hash_secret(secret)
        with self._naming:
            token = self.store.redeem_token(digest, at=at)
            if name is not None:
                try:
                    self._check_new_name(name)
                except (PkiError, ValueError):
                    name = None
            return self._enrol(digest, csr, token, name, at=at, days=days)

    def _enrol(self, digest: str, csr: x509.CertificateSigningRequest, token: EnrolmentToken,
               name: str | None, *, at: datetime, days: int
               ) -> tuple[x509.Certificate, x509.Certificate, EnrolmentToken]:
        ca_key, ca_cert = self._ca()
        name = name or self._unique_name(token.organization)
        _, cert = authority.issue_certificate(
            ca_key, ca_cert, common_name=name, role="client", at=at, days=days,
            organization=token.organization, organizational_unit=token.group,
            public_key=csr.public_key())  # type: ignore[arg-type]
        self.store.add_certificate(record_for(cert, kind="client", organization=token.organization,
                                              group=token.group, ae_titles=token.ae_titles))
        self.store.mark_token_used_by(digest, cert.serial_number)
        return cert, ca_cert, token


def _ae_list(ae_titles: Sequence[str]) -> tuple[str, ...]:
    out = []
    for ae in ae_titles:
        ae = ae.strip()
        if not ae or len(ae) > 16 or "\\" in ae:
            raise ValueError(f"invalid AE title {ae!r} (1 to 16 characters, no backslash)")
        out.append(ae)
    return tuple(out)
